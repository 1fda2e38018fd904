"""Reports: the run record (canonical JSON), one neutral view of it, and its renderers."""
