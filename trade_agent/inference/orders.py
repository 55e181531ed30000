"""From target weights and current holdings to orders, with the backtester's cost model.

Holdings are a cash balance plus a quantity per symbol (``--holdings FILE``: JSON
``{"cash": 100000, "positions": {"AAPL": 120}}`` or CSV ``symbol,quantity`` with a ``CASH``
row). The portfolio is valued at the decision bar's close; each order moves a symbol from
its current quantity to ``weight x value / close``. The estimated cost is what the
backtester charges at the fill: ``(cost_bps + slippage_bps) / 1e4`` of the traded notional.
It is an estimate: the fill is at the next open (quantities and notional move with that
bar's overnight gap) and sizes positions on the value after costs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trade_agent.errors import DataValidationError, InputError

CASH = "CASH"


@dataclass(frozen=True)
class Holdings:
    """Cash and the quantity held of each symbol (shares, contracts, coins; short < 0)."""

    cash: float
    quantities: dict[str, float]

    @classmethod
    def load(cls, path: str | Path) -> Holdings:
        """Read ``--holdings`` (JSON or CSV, see the module docstring).

        Raises:
            InputError: a missing file, a bad value (naming the key or line) or an unknown layout.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"--holdings {path}: no such file; give a JSON or CSV file of cash and quantities")
        if path.suffix.lower() == ".json":
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataValidationError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
            except UnicodeDecodeError:
                raise DataValidationError(f"{path}: not UTF-8 text; save the holdings as UTF-8 JSON") from None
            return cls.from_json(raw, str(path))
        try:
            frame = pd.read_csv(path, dtype=str)
        except Exception as exc:  # pandas raises many types for unreadable files
            raise DataValidationError(f"{path}: cannot read as CSV ({' '.join(str(exc).split())})") from None
        columns = {c.strip().lower(): c for c in frame.columns}
        if "symbol" not in columns or "quantity" not in columns:
            raise DataValidationError(f"{path}: needs columns symbol,quantity (a row {CASH} for cash)")
        cash, quantities = 0.0, {}
        rows = zip(frame[columns["symbol"]], frame[columns["quantity"]], strict=True)
        for line, (symbol, quantity) in enumerate(rows, 2):
            value = _number(quantity, f"{path}: line {line}, column 'quantity'")
            name = str(symbol).strip()
            if name.upper() == CASH:
                cash += value
            elif name in quantities:
                raise DataValidationError(f"{path}: line {line}: symbol {name!r} appears twice; keep one row")
            else:
                quantities[name] = value
        return cls(cash, quantities)

    @classmethod
    def from_json(cls, raw: object, source: str) -> Holdings:
        """``{"cash": float, "positions": {symbol: quantity}}`` (an HTTP body's ``holdings`` too)."""
        if not isinstance(raw, dict) or not set(raw) <= {"cash", "positions"}:
            raise DataValidationError(f'{source}: holdings must be {{"cash": <number>, "positions": {{symbol: qty}}}}')
        positions = raw.get("positions", {})
        if not isinstance(positions, dict):
            raise DataValidationError(f"{source}: 'positions' must map each symbol to a quantity")
        cash = _number(raw.get("cash", 0.0), f"{source}: key 'cash'")
        return cls(cash, {str(s): _number(q, f"{source}: positions[{s!r}]") for s, q in positions.items()})


@dataclass(frozen=True)
class Order:
    """One symbol's move from its holding to the target, priced at the decision bar's close."""

    symbol: str
    price: float
    quantity: float
    target_weight: float
    target_quantity: float
    order_quantity: float
    order_notional: float
    estimated_cost: float


def _number(value: object, where: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataValidationError(f"{where}: {value!r} is not a number") from None
    if not np.isfinite(number):
        raise DataValidationError(f"{where}: {value!r} is not a finite number")
    return number


def orders_for(
    holdings: Holdings, weights: dict[str, float], prices: dict[str, float], cost_rate_bps: float
) -> tuple[list[Order], float, float]:
    """The orders, the portfolio value and the total estimated cost.

    Raises:
        InputError: a held symbol the model does not trade, or a portfolio worth <= 0.
    """
    unknown = sorted(set(holdings.quantities) - set(weights))
    if unknown:
        raise InputError(
            f"holdings: {unknown[0]!r} is not traded by the model ({', '.join(weights)}); "
            "close it outside the model or drop it from the holdings"
        )
    value = holdings.cash + sum(q * prices[s] for s, q in holdings.quantities.items())
    if value <= 0:
        raise InputError(f"holdings: the portfolio is worth {value:.2f} at the last close; it must be positive")
    rate = cost_rate_bps / 1e4
    orders = []
    for symbol, weight in weights.items():
        price = prices[symbol]
        held = holdings.quantities.get(symbol, 0.0)
        target = weight * value / price
        notional = (target - held) * price
        orders.append(Order(symbol, price, held, weight, target, target - held, notional, abs(notional) * rate))
    return orders, value, sum(o.estimated_cost for o in orders)
