"""Every validation rule: the exact one-line message, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from trade_agent.config import DataConfig
from trade_agent.data.ingest import load_file, prepare
from trade_agent.errors import DataSourceError, DataValidationError, InputError

HEADER = "timestamp,symbol,open,high,low,close,volume\n"
GOOD_ROWS = [
    "2020-01-02,AAA,10,11,9,10.5,100",
    "2020-01-03,AAA,10.5,11.5,10,11,120",
    "2020-01-06,AAA,11,12,10.5,11.5,0",
    "2020-01-07,AAA,11.5,12,11,11.2,90",
]


def _file(tmp_path: Path, rows: list[str], header: str = HEADER, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def _refused(tmp_path: Path, path: Path, config: DataConfig | None = None) -> str:
    """Run the prepare stage on ``path``; return the error and assert nothing was written."""
    out = tmp_path / "prepared"
    config = config or DataConfig(source="file", path=str(path))
    with pytest.raises(InputError) as err:
        prepare(config, out)
    assert not out.exists() or not any(out.iterdir()), "validation failure must not write outputs"
    assert "\n" not in str(err.value)
    return str(err.value)


def _with(row: int, replacement: str) -> list[str]:
    rows = list(GOOD_ROWS)
    rows[row] = replacement
    return rows


def test_good_file_loads_sorted_with_zero_volume_allowed(tmp_path: Path) -> None:
    rows = [GOOD_ROWS[2], GOOD_ROWS[0], GOOD_ROWS[3], GOOD_ROWS[1]]  # any order
    frame, report = load_file(_file(tmp_path, rows), DataConfig())
    assert frame["timestamp"].is_monotonic_increasing
    assert frame["volume"].tolist() == [100, 120, 0, 90]
    assert report.validation.rows == 4 and report.validation.symbols == ["AAA"]


def test_missing_file(tmp_path: Path) -> None:
    message = _refused(tmp_path, tmp_path / "nope.csv")
    assert message == f"{tmp_path / 'nope.csv'}: file not found; pass an existing CSV or Parquet file"


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert _refused(tmp_path, path).endswith("file is empty; expected a header line and data rows")


def test_header_only(tmp_path: Path) -> None:
    assert _refused(tmp_path, _file(tmp_path, [])).endswith("no data rows (only a header); add at least one bar")


def test_missing_required_column(tmp_path: Path) -> None:
    path = _file(tmp_path, ["2020-01-02,AAA,10,11,9,100"], header="timestamp,symbol,open,high,low,volume\n")
    message = _refused(tmp_path, path)
    assert "column 'close' is missing; expected columns: timestamp, [symbol,] open, high, low, close" in message
    assert "(found: timestamp, symbol, open, high, low, volume)" in message


def test_entirely_empty_column(tmp_path: Path) -> None:
    rows = [",".join(r.split(",")[:6]) + "," for r in GOOD_ROWS]
    assert _refused(tmp_path, _file(tmp_path, rows)).endswith(
        "column 'volume' is entirely empty; fill it or remove the column"
    )


def test_non_numeric_value_names_line(tmp_path: Path) -> None:
    message = _refused(tmp_path, _file(tmp_path, _with(2, "2020-01-06,AAA,11,12,abc,11.5,0")))
    assert message.endswith("column 'low', line 4: non-numeric value 'abc'; fix or remove the row")


def test_infinite_value(tmp_path: Path) -> None:
    message = _refused(tmp_path, _file(tmp_path, _with(1, "2020-01-03,AAA,10.5,inf,10,11,120")))
    assert "column 'high', line 3: infinite value" in message


def test_non_positive_price(tmp_path: Path) -> None:
    message = _refused(tmp_path, _file(tmp_path, _with(1, "2020-01-03,AAA,0,11.5,0,11,120")))
    assert "column 'open', line 3: price must be > 0, got 0.0" in message


def test_high_below_body(tmp_path: Path) -> None:
    message = _refused(tmp_path, _file(tmp_path, _with(3, "2020-01-07,AAA,11.5,11.4,11,11.2,90")))
    assert "column 'high', line 5: high 11.4 < max(open, close) 11.5" in message


def test_low_above_body(tmp_path: Path) -> None:
    message = _refused(tmp_path, _file(tmp_path, _with(0, "2020-01-02,AAA,10,11,10.2,10.5,100")))
    assert "column 'low', line 2: low 10.2 > min(open, close) 10.0" in message


def test_negative_volume(tmp_path: Path) -> None:
    message = _refused(tmp_path, _file(tmp_path, _with(0, "2020-01-02,AAA,10,11,9,10.5,-5")))
    assert "column 'volume', line 2: negative volume -5.0; volume must be >= 0" in message


def test_duplicate_timestamp_symbol(tmp_path: Path) -> None:
    message = _refused(tmp_path, _file(tmp_path, [*GOOD_ROWS, "2020-01-03,AAA,10,11,9,10.5,1"]))
    assert "lines 3, 6: duplicate (timestamp, symbol) = (2020-01-03 00:00:00, AAA)" in message


def test_unparseable_timestamp(tmp_path: Path) -> None:
    message = _refused(tmp_path, _file(tmp_path, _with(1, "03/01/2020,AAA,10.5,11.5,10,11,120")))
    assert "column 'timestamp', line 3: cannot parse '03/01/2020' as an ISO 8601 timestamp" in message
    assert "set data.date_format" in message


def test_gap_longer_than_max_gap_names_rows(tmp_path: Path) -> None:
    rows = (
        list(GOOD_ROWS)
        + [f"2020-01-{d:02d},AAA,11,12,10.5,,90" for d in (8, 9)]
        + ["2020-01-10,AAA,11,12,10.5,11.5,90"]
    )
    path = _file(tmp_path, rows)
    message = _refused(tmp_path, path, DataConfig(source="file", path=str(path), max_gap=1))
    assert "column 'close', lines 6, 7: 2 consecutive missing values exceed data.max_gap=1" in message


def test_short_gap_is_forward_filled_and_counted(tmp_path: Path) -> None:
    rows = _with(2, "2020-01-06,AAA,11,12,10.5,,")
    frame, report = load_file(_file(tmp_path, rows), DataConfig(max_gap=3))
    assert frame.loc[2, "close"] == 11.0 and frame.loc[2, "volume"] == 120
    assert report.validation.repaired_values == {"close": 1, "volume": 1}
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()


def test_leading_missing_value_cannot_be_filled(tmp_path: Path) -> None:
    message = _refused(tmp_path, _file(tmp_path, _with(0, "2020-01-02,AAA,10,11,9,,100")))
    assert "before the first valid bar of symbol 'AAA'" in message


def test_too_few_rows_for_the_pipeline_states_minimum(tmp_path: Path, tiny_params) -> None:
    from trade_agent.features.build import minimum_bars, run_features_stage

    prepared = tmp_path / "prepared"
    market = pd.DataFrame(
        {
            "timestamp": pd.bdate_range("2020-01-01", periods=40),
            "symbol": "AAA",
            "open": 10.0,
            "high": 11.0,
            "low": 9.0,
            "close": 10.0,
            "volume": 1.0,
        }
    )
    prepared.mkdir()
    market.to_parquet(prepared / "market.parquet")
    out = tmp_path / "features"
    with pytest.raises(InputError) as err:
        run_features_stage(tiny_params, prepared / "market.parquet", out)
    need = minimum_bars(tiny_params)
    assert f"symbol AAA has 40 bars; the configured pipeline needs at least {need} per symbol" in str(err.value)
    assert not out.exists()


def test_single_instrument_exports_are_recognised(tmp_path: Path) -> None:
    yahoo = _file(
        tmp_path,
        ["2020-01-03,10.5,11.5,10,11,5.5,120", "2020-01-02,10,11,9,10,5,100"],
        header="Date,Open,High,Low,Close,Adj Close,Volume\n",
        name="msft.csv",
    )
    frame, report = load_file(yahoo, DataConfig())
    assert frame["symbol"].unique().tolist() == ["MSFT"]
    # Adjusted by adj_close / close (0.5): prices halve, traded shares double.
    assert frame["close"].tolist() == [5.0, 5.5] and frame["volume"].tolist() == [200, 240]
    assert report.validation.adjusted_with_adj_close

    dukascopy = _file(
        tmp_path,
        ["02.01.2017 22:00:00.000,1.05,1.06,1.04,1.055,1234.5", "03.01.2017 22:00:00.000,1.055,1.07,1.05,1.06,0"],
        header="Gmt time,Open,High,Low,Close,Volume\n",
        name="eurusd.csv",
    )
    frame, _ = load_file(dukascopy, DataConfig(date_format="%d.%m.%Y %H:%M:%S.%f", symbol="EURUSD"))
    assert frame["timestamp"].tolist() == [pd.Timestamp("2017-01-02 22:00"), pd.Timestamp("2017-01-03 22:00")]
    assert frame["symbol"].iloc[0] == "EURUSD"

    metatrader = _file(
        tmp_path,
        ["2020.01.02;10:00;1;2;0.5;1.5;10;0"],
        header="DATE;TIME;OPEN;HIGH;LOW;CLOSE;VOL;OpenInt\n",
        name="mt.csv",
    )
    frame, _ = load_file(metatrader, DataConfig(date_format="%Y.%m.%d %H:%M"))
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2020-01-02 10:00")
    assert "OpenInt" not in frame.columns and list(frame.columns)[:2] == ["timestamp", "symbol"]


def test_parquet_long_format_and_row_numbers(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "timestamp": pd.bdate_range("2020-01-01", periods=3),
            "symbol": "X",
            "open": [1.0, 1.0, 1.0],
            "high": [2.0, 2.0, 0.5],
            "low": [0.5, 0.5, 0.4],
            "close": [1.5, 1.5, 1.5],
            "volume": [1.0, 1.0, 1.0],
        }
    )
    path = tmp_path / "bars.parquet"
    frame.to_parquet(path)
    message = _refused(tmp_path, path)
    assert "column 'high', row 3: high 0.5 < max(open, close) 1.5" in message


def test_missing_data_errors_are_input_errors_with_exit_code_2(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError) as err:
        load_file(tmp_path / "x.csv", DataConfig())
    assert err.value.exit_code == 2
    assert issubclass(DataValidationError, InputError)


def test_european_decimal_commas(tmp_path: Path) -> None:
    path = tmp_path / "euro.csv"
    path.write_text(
        "Date;Open;High;Low;Close;Volume\n2010-01-04;100,05;101,13;99,05;100,13;1.234,5\n"
        "2010-01-05;99,9;100;99,5;99,95;2439\n"
    )
    frame, _ = load_file(path, DataConfig())
    assert frame["open"].tolist() == [100.05, 99.9] and frame["volume"].tolist() == [1234.5, 2439.0]


def test_metatrader_tab_export(tmp_path: Path) -> None:
    path = tmp_path / "eurusd.txt"
    path.write_text(
        "<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\n2010.01.04\t00:00:00\t1.1\t1.2\t1.0\t1.15\t2439\n"
    )
    frame, _ = load_file(path, DataConfig(date_format="%Y.%m.%d %H:%M:%S"))
    assert frame.iloc[0]["close"] == 1.15 and frame.iloc[0]["volume"] == 2439 and frame["symbol"].iloc[0] == "EURUSD"


def test_blank_symbol_and_mixed_time_zones(tmp_path: Path) -> None:
    path = _file(tmp_path, _with(1, "2020-01-03,,10.5,11.5,10,11,120"))
    assert _refused(tmp_path, path).endswith(
        "column 'symbol', line 3: missing symbol; every row of a long-format file needs a symbol"
    )
    mixed = _file(tmp_path, _with(2, "2020-01-06T00:00:00+01:00,AAA,11,12,10.5,11.5,0"))
    # The minority is named: here the one row with an offset among naive ones.
    assert "line 4: timestamp '2020-01-06T00:00:00+01:00' has a UTC offset while others do not" in _refused(
        tmp_path, mixed
    )


def test_adj_close_gap_repairs_the_factor_not_the_price(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        ["2020-01-02,10,11,9,10,100,5", "2020-01-03,10,12,9,11,100,", "2020-01-06,11,12,10,12,100,6"],
        header="Date,Open,High,Low,Close,Volume,Adj Close\n",
    )
    frame, report = load_file(path, DataConfig())
    # The gap takes the previous factor (0.5): 11 * 0.5, not yesterday's adjusted close 5.
    assert frame["close"].tolist() == [5.0, 5.5, 6.0]
    assert report.validation.repaired_values == {"adj close": 1}


def test_symbols_without_a_common_calendar_are_refused(tmp_path: Path) -> None:
    rows = ["2020-01-02,A,10,11,9,10,1", "2020-01-03,B,10,11,9,10,1"]
    message = _refused(tmp_path, _file(tmp_path, rows))
    assert "symbols share no timestamp (A 2020-01-02 00:00:00..2020-01-02 00:00:00, B 2020-01-03" in message


def test_prepare_runs_its_check_before_writing(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD_ROWS)

    def too_short(frame: pd.DataFrame, source: str) -> None:
        raise InputError(f"{source}: too short")

    out = tmp_path / "prepared"
    with pytest.raises(InputError, match="too short"):
        prepare(DataConfig(source="file", path=str(path)), out, check=too_short)
    assert not out.exists()
