"""Scoring a run: answer extraction, statistics, reference scores and the report's metrics."""
