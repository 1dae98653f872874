"""The static files storage `collectstatic` uses when the site serves collected files (JANCTION_STATIC_COLLECTED=1)."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class GzipManifestStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's hashed, compressed copies, gzip only.

    WhiteNoise also writes Brotli copies whenever the `brotli` module is importable, and WeasyPrint's font
    handling (fonttools[woff]) installs it. Brotli at its default quality made `collectstatic`, which `make run`
    runs on every start, take minutes instead of seconds on a loaded machine; gzip alone keeps it quick.
    """

    def create_compressor(self, **kwargs):
        return super().create_compressor(use_brotli=False, **kwargs)
