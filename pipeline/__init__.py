"""pcpipe: point-cloud processing and publishing for VIRTUAL SHIZUOKA."""
__version__ = "0.1.0"
