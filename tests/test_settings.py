"""Settings: environment over the TOML file over defaults; batching overrides only when set."""

from app.settings import Settings


def test_environment_overrides_file_and_defaults(tmp_path, monkeypatch):
    config = tmp_path / "zhserve.toml"
    config.write_text('port = 9123\nmax_batch_size = 8\nrequest_timeout_s = 3\n')
    monkeypatch.setenv("ZHSERVE_CONFIG", str(config))
    monkeypatch.setenv("ZHSERVE_PORT", "9000")
    s = Settings()
    assert s.port == 9000 and s.max_batch_size == 8 and s.request_timeout_s == 3
    assert s.batching_overrides() == {"max_batch_size": 8}
    assert Settings(port=1234).port == 1234  # explicit values (CLI flags) win


def test_defaults_leave_model_batching_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("ZHSERVE_CONFIG", str(tmp_path / "absent.toml"))
    s = Settings()
    assert s.batching_overrides() == {} and s.device == "auto" and s.port == 8000
