"""Datapoints: project-defined typed fields, and their values per patient."""
