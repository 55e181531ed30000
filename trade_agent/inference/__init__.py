"""Acting on new data with a registered model: ``predict`` (the next bar's targets and orders).

``trade-agent predict``, ``trade-agent paper`` and ``trade-agent serve`` all go through
:class:`Predictor`, so a paper account, an HTTP answer and the CLI agree.
"""

from trade_agent.inference.orders import Holdings, Order
from trade_agent.inference.predictor import Prediction, Predictor, predict

__all__ = ["Holdings", "Order", "Prediction", "Predictor", "predict"]
