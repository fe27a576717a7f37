"""Operations: structured request logs with request ids, and Prometheus metrics."""
