"""Hugging Face interoperability: key maps, import and export of model directories."""
