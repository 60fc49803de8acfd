"""The fake upstream provider: a server that speaks each provider's wire format byte for
byte (JSON bodies and SSE), for the tests, the quickstart and the benchmark. Not part
of the gateway: nothing in controlplane/, dataplane/ or clients/ imports it except the
`spendgate mock-upstream` command. Start at server.py."""
