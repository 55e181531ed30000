"""``trade-agent serve``: registered models over HTTP (FastAPI on uvicorn, the ``serve`` extra).

Every model is restored from the registry and verified once, at start-up (a failed check
and the server does not start). Endpoints:

- ``POST /predict`` (the first ``--model``) and ``POST /models/{id}/predict``: body
  ``{"bars": [{"timestamp": .., "symbol": .., "open": .., ...}], "as_of": null, "start": null,
  "holdings": null}``, answer: the :class:`~trade_agent.inference.Prediction` of ``predict``;
- ``GET /model``, ``GET /models/{id}``: id, version, grade, lineage, preprocessors, training
  period, symbols and the bars a request needs; ``GET /models``: the served ids;
- ``GET /health``; OpenAPI docs at ``/docs``.

A request the CLI would refuse (bad bars, too short a history, unknown symbols, an
``as_of`` outside the bars) gets HTTP 422 with the CLI's one-line message as ``detail``;
a body that is not JSON or not of this shape gets 422 with one line saying so.
"""

import logging
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from trade_agent.config import Params
from trade_agent.errors import InputError, TradeAgentError
from trade_agent.inference import Holdings, Predictor
from trade_agent.registry import ModelRegistry

log = logging.getLogger(__name__)

BODY = "request body"


class PredictRequest(BaseModel):
    """``POST /predict``: the bars (as many as the model needs) and the CLI's options."""

    model_config = ConfigDict(extra="forbid")
    bars: list[dict[str, Any]] = Field(description="One object per symbol and bar: timestamp, symbol, OHLCV.")
    as_of: str | None = Field(None, description="Decide after the close of this bar (default: the last).")
    start: str | None = Field(None, description="Bar the model's track starts flat at (default: the first it can).")
    holdings: dict[str, Any] | None = Field(None, description='{"cash": .., "positions": {symbol: quantity}}')


def model_card(predictor: Predictor) -> dict[str, Any]:
    """What ``GET /model`` says about a served model (all from the verified registry entry)."""
    registry, entry = predictor.registry, predictor.entry

    def lineage(model_id: str) -> list[dict[str, Any]]:
        node = registry.get_model(model_id)
        return [
            {"model_id": d, "model_type": registry.get_model(d).model_type, "upstream": lineage(d)}
            for d in node.dependencies
        ]

    def training_period(model_id: str) -> dict[str, Any] | None:
        node = registry.get_model(model_id)
        splits = node.dataset_info.get("splits") if isinstance(node.dataset_info, dict) else None
        if isinstance(splits, dict) and "train" in splits:
            return {name: splits[name] for name in ("train", "val", "test") if name in splits}
        for dependency in node.dependencies:
            found = training_period(dependency)
            if found is not None:
                return found
        return None

    inputs = predictor.inputs
    return {
        "model_id": entry.model_id,
        "model_type": entry.model_type,
        "version": entry.version,
        "grade": entry.performance_grade,
        "created_at": entry.created_at,
        "lineage": lineage(entry.model_id),
        "preprocessor_ids": sorted(inputs.preprocessors),
        "training_period": training_period(entry.model_id),
        "symbols": inputs.symbols,
        "bars_needed": inputs.bars_needed,
        "bar_interval": inputs.frequency.bar_interval if inputs.frequency is not None else None,
        "metrics": entry.metrics,
    }


def create_app(predictors: list[Predictor]) -> FastAPI:
    """The FastAPI app serving ``predictors`` (the first answers ``/predict`` and ``/model``)."""
    by_id = {p.model_id: p for p in predictors}
    default = predictors[0]

    app = FastAPI(
        title="trade-agent",
        summary="Registered trading models: target weights for the next bar.",
        version="1",
    )

    @app.exception_handler(RequestValidationError)
    async def one_line(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        if first.get("type") == "json_invalid":
            detail = f"{BODY}: not JSON ({first.get('ctx', {}).get('error', 'invalid')}); send an object with 'bars'"
        else:
            detail = f'{BODY}: {where}: {first.get("msg", "invalid")}; send {{"bars": [...], "as_of": null}}'
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(InputError)
    async def refused(_: Request, error: InputError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": " ".join(str(error).split())})

    @app.exception_handler(TradeAgentError)
    async def failed(_: Request, error: TradeAgentError) -> JSONResponse:
        log.error("prediction failed: %s", error)
        return JSONResponse(status_code=500, content={"detail": " ".join(str(error).split())})

    @app.exception_handler(Exception)
    async def crashed(_: Request, error: Exception) -> JSONResponse:
        log.exception("prediction crashed")
        detail = f"unexpected {type(error).__name__}: {' '.join(str(error).split())}; see the server log"
        return JSONResponse(status_code=500, content={"detail": detail})

    def answer(predictor: Predictor, request: PredictRequest) -> dict[str, Any]:
        holdings = Holdings.from_json(request.holdings, f"{BODY}: holdings") if request.holdings is not None else None
        return predictor.predict(request.bars, request.as_of, holdings, request.start, source=BODY).to_json()

    def served(model_id: str) -> Predictor:
        if model_id not in by_id:
            raise HTTPException(404, f"model {model_id!r} is not served here; serving: {', '.join(by_id)}")
        return by_id[model_id]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(by_id)}

    @app.get("/model")
    def model() -> dict[str, Any]:
        return model_card(default)

    @app.get("/models")
    async def models() -> dict[str, Any]:
        return {"models": list(by_id), "default": default.model_id}

    @app.get("/models/{model_id}")
    def model_by_id(model_id: str) -> dict[str, Any]:
        return model_card(served(model_id))

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict[str, Any]:
        return answer(default, request)

    @app.post("/models/{model_id}/predict")
    def predict_by_id(model_id: str, request: PredictRequest) -> dict[str, Any]:
        return answer(served(model_id), request)

    return app


def load_predictors(model_ids: list[str], params: Params) -> list[Predictor]:
    """Every model restored and verified (raises before the server starts when one fails)."""
    if not model_ids:
        raise InputError("--model: give at least one registered model id")
    registry = ModelRegistry("models", grading=params.grading)
    predictors: list[Predictor] = []
    try:
        for model_id in model_ids:
            predictors.append(Predictor(model_id, registry, params))
        if len({p.model_id for p in predictors}) != len(predictors):
            raise InputError("--model: the same model is given twice; give each once")
    except BaseException:
        for predictor in predictors:
            predictor.close()
        raise
    return predictors


def run_server(model_ids: list[str], host: str, port: int, params: Params) -> None:
    """Load, verify, then serve until interrupted."""

    predictors = load_predictors(model_ids, params)
    app = create_app(predictors)
    log.info(
        "serving %s on http://%s:%d (POST /predict, GET /model, docs at /docs)",
        ", ".join(p.model_id for p in predictors),
        host,
        port,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        for predictor in predictors:
            predictor.close()
