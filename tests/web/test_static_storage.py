"""collectstatic writes gzip copies only, even where `brotli` is installed (WeasyPrint's fonttools brings it)."""

from whitenoise import compress

from janction.static_storage import GzipManifestStaticFilesStorage


def test_the_collected_files_are_gzipped_and_never_brotli_compressed(monkeypatch, tmp_path):
    monkeypatch.setattr(compress, "brotli_installed", True)  # as when WeasyPrint's dependencies are installed
    storage = GzipManifestStaticFilesStorage(location=str(tmp_path))
    compressor = storage.create_compressor(extensions=None, quiet=True)
    assert (compressor.use_gzip, compressor.use_brotli) == (True, False)
    source = tmp_path / "big.js"
    source.write_text("const chart = 1;\n" * 2000)
    written = list(compressor.compress(str(source)))
    assert written == [str(source) + ".gz"]
