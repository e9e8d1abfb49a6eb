"""The edgesplit C runtime: C sources, the public header, the model schema and a thin cffi binding.

Importing this package loads nothing; ``cruntime.binding.lib`` opens the shared library on first use.
"""
