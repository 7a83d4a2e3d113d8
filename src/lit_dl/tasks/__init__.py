"""Training logic: one LightningModule per task."""

from lit_dl.tasks.base import BaseTask
from lit_dl.tasks.classification import ClassificationTask
from lit_dl.tasks.forecasting import ForecastTask
from lit_dl.tasks.gan import GANTask
from lit_dl.tasks.generative import GenerativeTask, ImageGenerativeTask
from lit_dl.tasks.language_model import LanguageModelTask
from lit_dl.tasks.regression import RegressionTask
from lit_dl.tasks.vae import VAETask

__all__ = [
    "BaseTask",
    "ClassificationTask",
    "ForecastTask",
    "GANTask",
    "GenerativeTask",
    "ImageGenerativeTask",
    "LanguageModelTask",
    "RegressionTask",
    "VAETask",
]
