"""ClickHouse migrations, applied in number order by `manage.py migrate_clickhouse`.

`NNNN_description.sql` (statements ending with `;` at the end of a line) or
`NNNN_description.py` (a `statements(context)` function); see analytics/migrate.py. Not
Django's `analytics/migrations/`, which holds the app's relational models.
"""
