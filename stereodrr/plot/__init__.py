"""Figures (matplotlib, Agg backend) that results a person looks at are saved as PNG."""
