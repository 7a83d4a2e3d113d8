"""Training logic: one LightningModule per task, all on one base (:class:`Task`).

``Task`` -> ``SupervisedTask`` (classification, regression, forecasting, language models)
``Task`` -> ``GenerativeTask`` (VAE and GAN, for images and for tables)
"""

from lit_dl.tasks.base import Task
from lit_dl.tasks.classification import ClassificationTask
from lit_dl.tasks.forecasting import ForecastTask
from lit_dl.tasks.gan import GANTask
from lit_dl.tasks.generative import GenerativeTask, ImageGenerativeTask, SampleSource, TableGenerativeTask
from lit_dl.tasks.language_model import LanguageModelTask
from lit_dl.tasks.regression import RegressionTask
from lit_dl.tasks.supervised import SupervisedTask
from lit_dl.tasks.tabular_gan import TabularGANTask
from lit_dl.tasks.tabular_vae import TabularVAETask
from lit_dl.tasks.vae import VAETask

# lit_dl 0.1 name of the supervised base, kept for user code that subclasses it.
BaseTask = SupervisedTask

__all__ = [
    "BaseTask",
    "ClassificationTask",
    "ForecastTask",
    "GANTask",
    "GenerativeTask",
    "ImageGenerativeTask",
    "LanguageModelTask",
    "RegressionTask",
    "SampleSource",
    "SupervisedTask",
    "TableGenerativeTask",
    "TabularGANTask",
    "TabularVAETask",
    "Task",
    "VAETask",
]
