"""The ai-eval-system server: REST API, persistence, queue and workers around aieval_engine."""
