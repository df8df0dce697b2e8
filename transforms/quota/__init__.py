"""One quota for a fleet of workers and jobs: leases from a coordinator (Redis), enforced locally."""
