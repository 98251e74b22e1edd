"""The look a run's evaluation figures (`xentlab.core.figures`) and a sweep's charts (`xentlab.report.charts`)
share, at the ground so both read one value without importing each other."""

CHART_FONT = 9  # points: tick labels and legends stay readable at the MLflow artifact viewer's width
