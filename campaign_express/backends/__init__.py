"""Backends chosen by URL: each concern has one small interface, a production implementation
and an embedded (in-process) one, and both pass the same contract tests.

Nothing here imports Django: the bidder uses these modules without loading the ORM.
"""
