"""Traffic traces: Azure CSV import, synthetic generation and summary statistics."""
