"""Stand-ins for foreign rate limiters in front of the scoring service (nginx limit_req)."""
