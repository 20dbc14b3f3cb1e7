"""What operators read and do: Prometheus metrics (`metrics`), the status page and
`/status.json` (`status`), and the admin endpoint's outage drills (`admin`). May import
`chain` and everything below it, never the HTTP edge.
"""
