"""Patients (subjects): project-scoped API and the Patients API by UUID."""
