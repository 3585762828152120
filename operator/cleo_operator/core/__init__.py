"""The bottom layer: what every other package may need and nothing of the domain.

One error base (`errors`), one redactor (`redaction`), one RFC 3339 reader and writer
(`times`), one reader of durations from the environment (`environment`) and a bounded wait
for thread pools to end (`threads`). It imports
nothing of the operator, so every layer can import it (docs/architecture.md).
"""
