"""Real-world exports: timestamps as written, the dataset's bar frequency, learnable labels, folders of files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trade_agent.config import DataConfig, LabelsConfig
from trade_agent.data.frequency import infer_frequency
from trade_agent.data.ingest import load_file, prepare
from trade_agent.data.timestamps import TimestampProblem, parse_timestamps
from trade_agent.errors import DataSourceError, DataValidationError
from trade_agent.features.labels import FLAT, check_label_balance, dead_zone, make_labels

ROOT = Path(__file__).resolve().parents[1]
CLI = ["python", "-m", "trade_agent.cli"]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["2017-01-31T22:00:00Z", "2017-02-01T00:30:00+01:00"], ["2017-01-31 22:00", "2017-01-31 23:30"]),
        (["2017-01-31 22:00:00", "2017-02-01 23:00:00"], ["2017-01-31 22:00", "2017-02-01 23:00"]),
        (["1/4/1999", "1/13/1999"], ["1999-01-04", "1999-01-13"]),  # Yahoo, US: second field 13 -> month-first
        (["13/1/1999", "4/2/1999"], ["1999-01-13", "1999-02-04"]),  # first field 13 -> day-first
        (["2/13/1999 4:05 PM", "2/14/1999 11:00 AM"], ["1999-02-13 16:05", "1999-02-14 11:00"]),
        (["01.01.2017 22:00:00.000", "02.01.2017 23:00:00.250"], ["2017-01-01 22:00", "2017-01-02 23:00:00.25"]),
        (["01.02.2017 22:00", "01.02.2017 23:00"], ["2017-02-01 22:00", "2017-02-01 23:00"]),  # dots: day-first
        (["01.02.2017", "02.02.2017"], ["2017-02-01", "2017-02-02"]),
        (["2017.01.31 22:00", "2017.02.01 23:00"], ["2017-01-31 22:00", "2017-02-01 23:00"]),  # MetaTrader
        (["20170131", "20170201"], ["2017-01-31", "2017-02-01"]),
        (["20170131 220000", "20170201 2300"], ["2017-01-31 22:00", "2017-02-01 23:00"]),  # seconds optional
        (["1/2/2017", "2017-01-31"], None),  # one layout per file
        (["20170131 220000", "20170201 230000"], ["2017-01-31 22:00", "2017-02-01 23:00"]),  # Stooq Date+Time
        (["1485900000", "1485903600"], ["2017-01-31 22:00", "2017-01-31 23:00"]),  # epoch seconds
        (["1485900000000", "1485903600500"], ["2017-01-31 22:00", "2017-01-31 23:00:00.5"]),  # epoch ms
    ],
)
def test_timestamp_layouts_parse_to_the_right_instant(values: list[str], expected: list[str] | None) -> None:
    if expected is None:
        with pytest.raises(TimestampProblem, match="does not follow the layout of the first timestamp"):
            parse_timestamps(pd.Series(values))
        return
    parsed = parse_timestamps(pd.Series(values)).values
    assert parsed.tolist() == [pd.Timestamp(x) for x in expected]


def test_numeric_columns_yyyymmdd_and_epoch() -> None:
    assert parse_timestamps(pd.Series([20170131, 20170201])).values.tolist() == [
        pd.Timestamp("2017-01-31"),
        pd.Timestamp("2017-02-01"),
    ]
    epoch_ms = pd.Series(np.array([1485900000000, 1485903600000], dtype=np.int64))
    assert parse_timestamps(epoch_ms).values.tolist() == [
        pd.Timestamp("2017-01-31 22:00"),
        pd.Timestamp("2017-01-31 23:00"),
    ]
    assert parse_timestamps(pd.Series([1485900000.25])).values.tolist() == [pd.Timestamp("2017-01-31 22:00:00.25")]
    with pytest.raises(TimestampProblem, match="too small for epoch seconds"):
        parse_timestamps(pd.Series([12345, 67890]))


def test_invalid_dates_and_mixed_orders_are_refused() -> None:
    with pytest.raises(TimestampProblem, match="'31/02/2017' is not a valid date/time read as %d/%m/%Y"):
        parse_timestamps(pd.Series(["31/02/2017", "13/01/2017"]))
    with pytest.raises(TimestampProblem, match=r"can only be day-first and .* only month-first"):
        parse_timestamps(pd.Series(["13/01/2017", "01/13/2017"]))


def _export(path: Path, dates: list[str], header: str = "Date") -> Path:
    n = len(dates)
    close = np.linspace(10, 11, n)
    frame = pd.DataFrame({header: dates, "Open": close, "High": close + 0.5, "Low": close - 0.5, "Close": close})
    frame["Volume"] = 100
    frame.to_csv(path, index=False)
    return path


def test_ambiguous_file_is_refused_with_both_readings_and_the_header(tmp_path: Path) -> None:
    path = _export(tmp_path / "spy.csv", [f"{m}/{d}/2020" for m in (1, 2, 3) for d in (1, 2, 3)])
    with pytest.raises(DataValidationError) as refused:
        load_file(path, DataConfig())
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: column 'Date', line 3: ambiguous dates")  # the file's own header
    assert "'1/2/2020' reads as 01 Feb 2020 (day-first) or 02 Jan 2020 (month-first)" in message
    assert "set data.date_format: '%d/%m/%Y' (day-first) or '%m/%d/%Y' (month-first)" in message
    # data.date_format overrides the detection.
    frame, _ = load_file(path, DataConfig(date_format="%d/%m/%Y"))
    assert frame["timestamp"].tolist() == sorted(pd.Timestamp(2020, m, d) for m in (1, 2, 3) for d in (1, 2, 3))
    assert pd.Timestamp("2020-02-01") in frame["timestamp"].tolist()


def test_day_above_12_in_the_first_field_reads_day_first_with_no_configuration(tmp_path: Path) -> None:
    days = pd.bdate_range("2020-01-01", periods=40)
    path = _export(tmp_path / "bmw.csv", [f"{d.day}/{d.month}/{d.year}" for d in days])
    frame, report = load_file(path, DataConfig())
    assert frame["timestamp"].tolist() == list(days)
    assert report.validation.timestamp_layout == "%d/%m/%Y"


def test_unparseable_timestamps_name_the_files_header(tmp_path: Path) -> None:
    path = _export(tmp_path / "x.csv", ["1/4/1999", "yesterday"], header="Date")
    with pytest.raises(DataValidationError, match=r"column 'Date', line 3: 'yesterday' does not follow the layout"):
        load_file(path, DataConfig())
    dukascopy = _export(tmp_path / "eurusd.csv", ["01.01.2017 22:00:00.000", "01.01.2017 25:00:00.000"], "Gmt time")
    with pytest.raises(
        DataValidationError, match=r"column 'Gmt time', line 3: '01.01.2017 25:00:00.000' is not a valid"
    ):
        load_file(dukascopy, DataConfig())


def fx_hours(start: str, end: str) -> pd.DatetimeIndex:
    """24x5 hourly FX: Sunday 22:00 to Friday 21:00 UTC."""
    hours = pd.date_range(start, end, freq="h")
    day, hour = hours.day_of_week, hours.hour
    closed = (day == 5) | ((day == 4) & (hour > 21)) | ((day == 6) & (hour < 22))
    return hours[~closed]


def test_hourly_24x5_and_daily_frequencies_are_counted_from_the_training_share() -> None:
    hours = fx_hours("2017-01-01 22:00", "2017-12-29 21:00")
    frequency = infer_frequency(hours.to_numpy(), 0.7)
    n = int(np.floor(0.7 * len(hours)))
    span_years = (hours[n - 1] - hours[0]).total_seconds() / (365.25 * 86_400)
    assert frequency.periods_per_year == pytest.approx((n - 1) / span_years, rel=1e-12)
    assert 6_150 < frequency.periods_per_year < 6_300  # ~ 24 x 5 x 52.18
    assert (frequency.bar_interval, frequency.calendar, frequency.bars_per_week) == ("1h", "24x5", 120.0)
    assert frequency.missing_bars == 0  # weekends are session breaks, not gaps
    weeks = len(pd.Index(hours.to_period("W-SAT")).unique())
    assert frequency.session_breaks == weeks - 1
    # A bar missing inside a session is counted (and never filled in); weekends still are not.
    inside = [hours.get_loc(pd.Timestamp(t)) for t in ("2017-03-15 12:00", "2017-03-15 13:00", "2017-05-02 03:00")]
    holed = infer_frequency(hours.delete(inside).to_numpy(), 0.7)
    assert (holed.missing_bars, holed.session_breaks) == (3, frequency.session_breaks)

    days = pd.bdate_range("2010-01-01", "2015-12-31")
    daily = infer_frequency(days.to_numpy(), 0.7)
    n = int(np.floor(0.7 * len(days)))
    assert daily.periods_per_year == pytest.approx((n - 1) / ((days[n - 1] - days[0]).days / 365.25), rel=1e-12)
    assert (daily.bar_interval, daily.calendar, daily.missing_bars) == ("1D", "weekdays", 0)
    crypto = infer_frequency(pd.date_range("2021-01-01", periods=24 * 400, freq="h").to_numpy(), 0.7)
    assert crypto.calendar == "24x7" and crypto.periods_per_year == pytest.approx(8_766, rel=1e-9)
    minutes = infer_frequency(pd.date_range("2021-01-04", periods=20, freq="5min").to_numpy(), 0.7)
    assert minutes.bar_interval == "5min" and minutes.periods_per_year_source == "inferred"
    configured = infer_frequency(days.to_numpy(), 0.7, override=250.0)
    assert (configured.periods_per_year, configured.periods_per_year_source) == (250.0, "configured")
    assert configured.note() == "annualised with 250 bars/year of 1D bars, set by data.periods_per_year"
    assert frequency.note().startswith(f"annualised with {frequency.periods_per_year:,.0f} bars/year of 1h bars")


def test_prepare_records_the_frequency_in_provenance_and_metrics(tmp_path: Path) -> None:
    hours = fx_hours("2017-01-01 22:00", "2017-06-30 21:00")
    raw = tmp_path / "EURUSD.csv"
    _export(raw, list(hours.strftime("%d.%m.%Y %H:%M:%S.000")), header="Gmt time")
    prepare(DataConfig(source="file", path=str(raw)), tmp_path / "out", train_fraction=0.6)
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    expected = infer_frequency(hours.to_numpy(), 0.6)
    assert provenance["frequency"] == expected.to_json()
    assert provenance["validation"]["timestamp_layout"] == "%d.%m.%Y %H:%M:%S.%f"
    assert metrics["periods_per_year"] == expected.periods_per_year and metrics["bar_interval"] == "1h"


def test_degenerate_labels_are_refused_and_a_volatility_scaled_zone_fits_the_data() -> None:
    rng = np.random.default_rng(3)
    hours = fx_hours("2017-01-01 22:00", "2017-03-31 21:00")
    close = 1.05 * np.exp(np.cumsum(rng.normal(0, 0.0008, len(hours))))  # hourly FX: ~8 bp per bar
    market = pd.DataFrame({"timestamp": hours, "symbol": "EURUSD", "close": close})
    absolute = LabelsConfig(horizon=5, dead_zone=0.005, dead_zone_units="absolute")
    directions = make_labels(market, absolute)["target_direction"].to_numpy()
    with pytest.raises(DataValidationError) as refused:
        check_label_balance(directions[directions >= 0], absolute, "data/features")
    message = str(refused.value)
    assert "\n" not in message
    assert "of the training labels are 'flat'" in message and "flat 9" in message
    assert "labels.dead_zone 0.005 (absolute log return)" in message
    assert "lower labels.dead_zone" in message and "labels.dead_zone_units: volatility" in message
    with pytest.raises(DataValidationError, match="only 1 label class"):
        check_label_balance(np.full(50, FLAT), absolute, "data/features")

    scaled = LabelsConfig(horizon=5, dead_zone=0.25, dead_zone_units="volatility", volatility_window=20)
    labels = make_labels(market, scaled)["target_direction"].to_numpy()
    shares = check_label_balance(labels[labels >= 0], scaled, "data/features")
    assert max(shares.values()) < 0.5  # ~ 20 % flat for 0.25 sigma
    # The zone is 0.25 x the trailing std of 1-bar log returns x sqrt(horizon), computed causally:
    log_close = np.log(close)
    zone = dead_zone(log_close, np.array(["EURUSD"] * len(close)), scaled)
    t = 100
    trailing = np.diff(log_close[: t + 1])[-20:].std()
    assert zone[t] == pytest.approx(0.25 * trailing * np.sqrt(5), rel=1e-9)
    changed = log_close.copy()
    changed[t + 1 :] += 0.1  # the future moves; today's zone does not
    assert dead_zone(changed, np.array(["EURUSD"] * len(close)), scaled)[t] == zone[t]


def test_folder_and_glob_of_per_symbol_files(tmp_path: Path) -> None:
    folder = tmp_path / "stocks"
    folder.mkdir()
    days = pd.bdate_range("2020-01-01", periods=30)
    _export(folder / "AAPL.csv", [f"{d.month}/{d.day}/{d.year}" for d in days])  # Yahoo, US dates
    _export(folder / "msft.csv.gz", [f"{d:%Y-%m-%d}" for d in days])
    (folder / ".gitignore").write_text("x\n")
    (folder / "README.md").write_text("notes\n")
    frame, report = load_file(folder, DataConfig())
    assert sorted(frame["symbol"].unique()) == ["AAPL", "MSFT"] and len(frame) == 60
    assert [f["name"] for f in report.files] == ["AAPL.csv", "msft.csv.gz"]
    assert report.validation.timestamp_layout == "%m/%d/%Y | ISO 8601"
    by_glob, _ = load_file(folder / "*.csv", DataConfig())
    assert by_glob["symbol"].unique().tolist() == ["AAPL"]
    _export(folder / "AAPL.txt", [f"{d:%Y-%m-%d}" for d in days])
    with pytest.raises(DataValidationError, match=r"symbol 'AAPL' is also in .*AAPL\.csv; keep one file per symbol"):
        load_file(folder, DataConfig())
    with pytest.raises(DataSourceError, match="holds no data file"):
        load_file(tmp_path / "nothing-*.csv", DataConfig())


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_a_folder_of_csvs_through_dvc_repro(dvc_fresh_repo: Path) -> None:
    import yaml

    rng = np.random.default_rng(0)
    folder = dvc_fresh_repo / "data" / "raw" / "stocks"
    folder.mkdir(parents=True)
    days = pd.bdate_range("2019-01-01", periods=700)
    for symbol in ("AAA", "BBB"):
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
        frame = pd.DataFrame({"Date": [f"{d.month}/{d.day}/{d.year}" for d in days], "Open": close})
        frame = frame.assign(High=close * 1.01, Low=close * 0.99, Close=close, Volume=1000)
        frame.to_csv(folder / f"{symbol}.csv", index=False)
    params = yaml.safe_load((dvc_fresh_repo / "params.yaml").read_text())
    params["data"] |= {"source": "file", "path": "data/raw/stocks/"}
    (dvc_fresh_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro", "features"], dvc_fresh_repo)
    assert result.returncode == 0, result.stderr
    provenance = json.loads((dvc_fresh_repo / "data" / "prepared" / "provenance.json").read_text())
    assert provenance["validation"]["symbols"] == ["AAA", "BBB"]
    assert [f["name"] for f in provenance["files"]] == ["AAA.csv", "BBB.csv"]
    assert provenance["frequency"]["bar_interval"] == "1D" and provenance["frequency"]["calendar"] == "weekdays"
    schema = json.loads((dvc_fresh_repo / "data" / "features" / "schema.json").read_text())
    assert schema["frequency"] == provenance["frequency"]  # what every later stage annualises with
    # DVC tracks the folder: a new file re-runs prepare.
    (folder / "CCC.csv").write_text((folder / "AAA.csv").read_text())
    status = json.loads(run(["dvc", "status", "--json", "prepare"], dvc_fresh_repo).stdout)
    assert "prepare" in status, status


def test_data_pipeline_validate_accepts_common_exports_with_no_flags(tmp_path: Path) -> None:
    days = pd.bdate_range("1999-01-04", periods=400)
    yahoo = _export(tmp_path / "AAPL.csv", [f"{d.month}/{d.day}/{d.year}" for d in days])
    hours = fx_hours("2017-01-01 22:00", "2017-03-31 21:00")
    dukascopy = _export(tmp_path / "EURUSD.csv", list(hours.strftime("%d.%m.%Y %H:%M:%S.000")), header="Gmt time")
    for path, interval, expected in (
        (yahoo, "1D", infer_frequency(days.to_numpy(), 0.7)),
        (dukascopy, "1h", infer_frequency(hours.to_numpy(), 0.7)),
    ):
        result = run([*CLI, "data", "pipeline", "--validate", str(path), "--json"], tmp_path)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["bar_interval"] == interval
        assert summary["periods_per_year"] == round(expected.periods_per_year, 1)
        assert summary["periods_per_year_source"] == "inferred"
        shown = run([*CLI, "data", "pipeline", "--validate", str(path)], tmp_path)
        assert f"{round(expected.periods_per_year, 1)}" in shown.stdout and interval in shown.stdout


@pytest.mark.parametrize("interval", ["1h", "1D"])
def test_hourly_and_daily_files_report_sharpe_with_their_own_bars_per_year(tmp_path: Path, interval: str) -> None:
    """File -> prepare -> features -> the split's backtest: the Sharpe a report shows, by hand."""
    from tests.conftest import tiny_params_dict
    from trade_agent.config import params_from_dict
    from trade_agent.evaluation.suite import metrics_suite, run_backtest
    from trade_agent.features.build import run_features_stage
    from trade_agent.market.backtest import buy_and_hold_weights
    from trade_agent.market.panel import SplitData

    stamps = (
        fx_hours("2017-01-01 22:00", "2017-04-21 21:00")
        if interval == "1h"
        else pd.bdate_range("2015-01-01", periods=900)
    )
    rng = np.random.default_rng(5)
    close = 1.1 * np.exp(np.cumsum(rng.normal(1e-4, 0.002, len(stamps))))
    raw = tmp_path / "EURUSD.csv"
    written = (
        stamps.strftime("%d.%m.%Y %H:%M:%S.000")
        if interval == "1h"
        else [f"{d.month}/{d.day}/{d.year}" for d in stamps]
    )
    frame = pd.DataFrame({"Date": written, "Open": np.r_[close[0], close[:-1]], "Close": close})
    frame = frame.assign(
        High=frame[["Open", "Close"]].max(axis=1) * 1.0005,
        Low=frame[["Open", "Close"]].min(axis=1) * 0.9995,
        Volume=1.0,
    )
    frame.to_csv(raw, index=False)
    params = params_from_dict(tiny_params_dict(data={"source": "file", "path": str(raw)}))
    prepare(params.data, tmp_path / "prepared", train_fraction=params.splits.train)
    run_features_stage(params, tmp_path / "prepared" / "market.parquet", tmp_path / "features")
    data = SplitData.load(tmp_path / "features", None, tmp_path / "prepared" / "market.parquet", "test")

    # By hand: bars per year over the first 70 % of the bars, (n - 1) / span in years.
    n = int(np.floor(params.splits.train * len(stamps)))
    by_hand = (n - 1) / ((stamps[n - 1] - stamps[0]).total_seconds() / (365.25 * 86_400))
    assert data.frequency.periods_per_year == pytest.approx(by_hand, rel=1e-12)
    assert 6_150 < by_hand < 6_300 if interval == "1h" else 255 < by_hand < 265
    assert data.frequency.missing_bars == 0  # weekends: session breaks

    open_, close_, _, _ = data.prices()
    weights = buy_and_hold_weights(open_, 0, len(open_) - 1)
    result = run_backtest(weights, open_, close_, params.rl.common, data.frequency.periods_per_year)
    suite = metrics_suite(
        result, open_, close_, params.rl.common, params.evaluate, params.base.seed, data.frequency.periods_per_year
    )
    r = result.returns
    assert suite["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(by_hand), rel=1e-9)
    assert suite["periods_per_year"] == data.frequency.periods_per_year
