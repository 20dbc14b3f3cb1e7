"""The process around the server: listening and draining (`lifecycle`), hot reload
(`reload`) and `serve --workers N` (`workers`). May import `edge` and everything below.
"""
