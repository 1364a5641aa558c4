"""The operator dashboard served at /ui: HTML pages rendered from templates, a stylesheet and a
little JavaScript of our own that reads everything through the public API (docs/dashboard.md)."""
