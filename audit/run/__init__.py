"""The run: its inputs (models, images, regions), what it measures on each model, the records it makes (in this
process or on a Ray cluster), the cache and the store that keep them, the session the checks read, its progress and
its outputs."""
