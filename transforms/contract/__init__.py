"""A service and its events described by a file, instead of by code.

`loader.load_contract(path)` reads a contract (YAML or JSON): the events'
schema (`schema.py`), the service's endpoint, auth and TLS (`http.py`), the
request and response bodies (`codec.py`) and the status classes.
`http.HttpJsonCaller` is the `transforms.enrichment.Caller` that calls such a
service; `probe.probe` sends the one real request a job makes before it reads
anything. `payments.yaml` is the default: the project's fraud-scoring service.
"""
