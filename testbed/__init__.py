"""Local stand-ins for production, grouped by what each stands in for: `kafka` (broker, admin, producer,
synthetic events), `flink` (session cluster, job server, worker pool), `scoring` (the fraud-scoring
service), `limiters` (foreign rate limiters), `prism` (the Prism runner and its reproduction), `support`
(helpers they share); `bench` (the benchmark), `sim` (the simulation), `demo` (`make demo`)."""
