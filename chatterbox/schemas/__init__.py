"""The API's request and answer models (pydantic), from which ``/openapi.json`` is written."""
