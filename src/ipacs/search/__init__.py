"""Searching a project subtree: StringQuery, datapoint value search, CSV export."""
