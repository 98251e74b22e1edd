"""The comparison report of a sweep: query, statistics, rendering, charts."""
