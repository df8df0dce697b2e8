"""Local stand-ins for production: Kafka broker launcher, scoring service, event producer, benchmark."""
