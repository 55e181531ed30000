"""``trade-agent predict``, ``trade-agent paper run|status|report`` and ``trade-agent serve``:
a registered model acting on new data. Parse, call :mod:`trade_agent.inference`,
:mod:`trade_agent.paper` or :mod:`trade_agent.serving`, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from trade_agent.cli.tables import make_console
from trade_agent.errors import InputError

if TYPE_CHECKING:
    from trade_agent.config import Params
    from trade_agent.inference import Prediction

console = make_console()

ModelOption = Annotated[str, typer.Option("--model", help="Registered model id (prefix, type@latest/@best accepted).")]
DataFileOption = Annotated[
    str,
    typer.Option(
        "--data", help="CSV/Parquet file, folder or glob of per-symbol files, a prepared market.parquet, or 'sample'."
    ),
]
ParamsOption = Annotated[
    Path | None, typer.Option("--params", help="params file (default: ./params.yaml, else built-in defaults).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
PaperRoot = Annotated[Path, typer.Option("--dir", help="Folder of the account ledgers.")]


def _params(params_file: Path | None) -> Params:
    from trade_agent.config import load_params_or_defaults

    return load_params_or_defaults(params_file)


def _registered(model_ids: list[str], params: Params) -> None:
    """A bad id is refused before torch and the model stack load (a second or more)."""
    from trade_agent.registry import ModelRegistry

    registry = ModelRegistry("models", grading=params.grading)
    for model_id in model_ids:
        registry.resolve_id(model_id)


def predict(
    model: ModelOption,
    data: DataFileOption,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Decide after the close of this bar (default: the last bar).")
    ] = None,
    holdings: Annotated[
        Path | None,
        typer.Option(
            "--holdings", help='JSON {"cash": .., "positions": {symbol: qty}} or CSV symbol,quantity (+ a CASH row).'
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="Bar the model's track starts flat at (default: the first it can).")
    ] = None,
    params_file: ParamsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Target weights for the next bar (filled at its open) from a registered model, with its own
    saved preprocessor; with --holdings also the orders and their estimated cost."""
    params = _params(params_file)
    _registered([model], params)
    from trade_agent.inference import Holdings, Predictor
    from trade_agent.log import setup_logging

    setup_logging()
    held = Holdings.load(holdings) if holdings is not None else None
    with Predictor(model, params=params) as predictor:
        prediction = predictor.predict(predictor.load_bars(data), as_of, held, start, source=data)
    if as_json:
        typer.echo(json.dumps(prediction.to_json(), indent=2))
        return
    print_prediction(prediction)


def print_prediction(prediction: Prediction) -> None:
    console.print(f"{prediction.model_id}: targets for the bar after {prediction.as_of}")
    table = Table()
    table.add_column("symbol")
    table.add_column("target weight", justify="right")
    if prediction.orders is not None:
        for column in ("held", "target qty", "order qty", "order notional", "est. cost"):
            table.add_column(column, justify="right")
        for order in prediction.orders:
            table.add_row(
                order.symbol,
                f"{order.target_weight:+.4f}",
                f"{order.quantity:,.4f}",
                f"{order.target_quantity:,.4f}",
                f"{order.order_quantity:+,.4f}",
                f"{order.order_notional:+,.2f}",
                f"{order.estimated_cost:,.2f}",
            )
    else:
        for symbol, weight in prediction.weights.items():
            table.add_row(symbol, f"{weight:+.4f}")
    console.print(table)
    console.print(
        f"gross {prediction.gross_exposure:.4f}, net {prediction.net_exposure:+.4f}; decided on {prediction.bars} "
        f"{prediction.bar_interval} bars (track from {prediction.start}), filled at {prediction.fills_at}; "
        f"preprocessor {', '.join(prediction.preprocessor_ids)}"
    )
    if prediction.orders is not None and prediction.estimated_cost is not None:
        console.print(
            f"portfolio {prediction.portfolio_value:,.2f} at the last close; estimated cost "
            f"{prediction.estimated_cost:,.2f} ({prediction.cost_bps:g} bps + {prediction.slippage_bps:g} bps slippage)"
        )


paper_app = typer.Typer(no_args_is_help=True, help="Paper trading: a model trades a SQLite ledger bar by bar.")


@paper_app.command("run")
def paper_run(
    model: ModelOption,
    data: DataFileOption,
    account: Annotated[str, typer.Option("--account", help="Account name (paper/NAME.sqlite) or a .sqlite path.")],
    cash: Annotated[float, typer.Option("--cash", help="Starting cash of a new account.")] = 1e6,
    start: Annotated[
        str | None,
        typer.Option("--start", help="New account: the first bar it decides on (default: the first it can)."),
    ] = None,
    root: PaperRoot = Path("paper"),
    params_file: ParamsOption = None,
) -> None:
    """Process the bars of --data newer than the account's last bar: fill at each bar's open what
    was decided at the previous close, mark at the close, decide. One transaction per bar."""
    params = _params(params_file)
    _registered([model], params)
    from trade_agent.log import setup_logging
    from trade_agent.paper.trading import run_paper

    setup_logging()
    summary = run_paper(model, data, account, cash, start, params, root=root)
    if summary.new_bars == 0:
        console.print(f"{summary.path}: no bars newer than the account's last; nothing changed")
        return
    switched = f" (switched from {summary.switched_from})" if summary.switched_from else ""
    console.print(
        f"{summary.path}: {summary.new_bars} bars {summary.first} .. {summary.last} by {summary.model_id}{switched}; "
        f"equity {summary.equity:,.2f}"
    )


@paper_app.command("status")
def paper_status(
    account: Annotated[str, typer.Argument(help="Account name or .sqlite path.")],
    root: PaperRoot = Path("paper"),
    as_json: JsonOption = False,
) -> None:
    """Cash, equity, positions and the targets pending for the next open."""
    from dataclasses import asdict

    from trade_agent.paper.ledger import Ledger, ledger_path
    from trade_agent.paper.report import account_status

    with Ledger.open(ledger_path(account, root)) as ledger:
        status = account_status(ledger)
    if as_json:
        typer.echo(json.dumps(asdict(status), indent=2))
        return
    console.print(
        f"account {status.name} ({status.path}): {status.bars} bars {status.first} .. {status.last}; "
        f"cash {status.cash:,.2f}, equity {status.equity:,.2f} ({status.total_return:+.2%})"
    )
    for segment in status.models:
        console.print(f"  model {segment['model_id']} from {segment['from']} (track from {segment['track_start']})")
    console.print("positions at the last close; targets decided there, filled at the next open:")
    table = Table()
    for column in ("symbol", "quantity", "weight", "pending target"):
        table.add_column(column, justify="right" if column != "symbol" else "left")
    for symbol, held in status.positions.items():
        table.add_row(
            symbol, f"{held['quantity']:,.4f}", f"{held['weight']:+.4f}", f"{status.pending.get(symbol, 0.0):+.4f}"
        )
    console.print(table)


@paper_app.command("report")
def paper_report(
    account: Annotated[str, typer.Argument(help="Account name or .sqlite path.")],
    root: PaperRoot = Path("paper"),
    out: Annotated[Path, typer.Option("--out", help="Folder for NAME.md and NAME.png.")] = Path("reports/paper"),
    as_json: JsonOption = False,
) -> None:
    """Equity curve (PNG) and metrics table, with the backtest drift: the largest per-bar gap
    between the ledger's returns and the backtester's on the same targets and prices."""
    from trade_agent.paper.ledger import Ledger, ledger_path
    from trade_agent.paper.report import account_report

    with Ledger.open(ledger_path(account, root)) as ledger:
        summary, markdown, png = account_report(ledger, out)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(markdown.read_text())
    console.print(f"wrote {markdown} and {png}")


def serve(
    model: Annotated[
        list[str], typer.Option("--model", help="Registered model id; repeat to serve several (/models/{id}/predict).")
    ],
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    params_file: ParamsOption = None,
) -> None:
    """Serve registered models over HTTP (FastAPI + uvicorn; install the '.[serve]' extra):
    POST /predict, GET /model, GET /health, /models/{id}/predict, docs at /docs."""
    from trade_agent.log import setup_logging

    params = _params(params_file)
    _registered(model, params)
    try:
        from trade_agent.serving.app import run_server
    except ImportError as exc:
        raise InputError(f"trade-agent serve needs the serve extra ({exc}): pip install -e '.[serve]'") from None
    setup_logging()
    run_server(model, host, port, params)
