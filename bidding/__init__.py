"""The bid path: OpenRTB parsing, the snapshot index, eligibility, pricing and notices.

Imports no Django: the bidder runs without the ORM or the Django request cycle.
"""
