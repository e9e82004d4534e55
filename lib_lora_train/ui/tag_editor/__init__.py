"""The Dataset Tag Editor tab: layout, handlers, the tools panel and the thumbnail route."""
