"""The files the project ships (benchmark data, API documents, the demo corpus): `inversecoder.data`."""
