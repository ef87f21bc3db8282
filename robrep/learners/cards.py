"""What each learner is: its family, the paper it comes from, and whether it trains on labels.

One home for the built-in learners' cards (``robrep list``, the boards' entries and the family comparison read
them); a plugin learner declares its own as class attributes ``family``, ``paper`` and ``uses_labels``.
"""
from __future__ import annotations

from dataclasses import dataclass

SE_PAPER = ("Cemgil, Ghaisas, Dvijotham, Kohli: Adversarially Robust Representations with Smooth Encoders, "
            "ICLR 2020")


@dataclass(frozen=True)
class Card:
    family: str
    paper: str
    uses_labels: bool = False

    def describe(self) -> str:
        return f"{self.family}{' (uses labels)' if self.uses_labels else ''}; {self.paper}"


CARDS = {
    "vae": Card("VAE", "Kingma and Welling, Auto-Encoding Variational Bayes, ICLR 2014"),
    "beta-vae": Card("VAE", "Higgins et al., beta-VAE, ICLR 2017"),
    "beta-tcvae": Card("disentangling VAE", "Chen, Li, Grosse, Duvenaud, Isolating Sources of Disentanglement in "
                       "Variational Autoencoders, NeurIPS 2018"),
    "se-random": Card("Smooth Encoder", SE_PAPER),
    "se-adversarial": Card("Smooth Encoder", SE_PAPER),
    "se-fgsm": Card("Smooth Encoder", SE_PAPER + "; selection: Wong, Rice, Kolter, Fast is better than free, "
                    "ICLR 2020"),
    "se-warm": Card("Smooth Encoder", SE_PAPER + "; selection: Zheng et al., Efficient Adversarial Training with "
                    "Transferable Adversarial Examples, CVPR 2020"),
    "ae": Card("autoencoder", "Hinton and Salakhutdinov, Reducing the Dimensionality of Data with Neural "
               "Networks, Science 2006"),
    "dae": Card("autoencoder", "Vincent, Larochelle, Bengio, Manzagol, Extracting and Composing Robust Features "
                "with Denoising Autoencoders, ICML 2008"),
    "simclr": Card("contrastive", "Chen, Kornblith, Norouzi, Hinton, A Simple Framework for Contrastive Learning "
                   "of Visual Representations, ICML 2020"),
    "rocl": Card("adversarial contrastive", "Kim, Tack, Hwang, Adversarial Self-Supervised Contrastive Learning, "
                 "NeurIPS 2020"),
    "supervised": Card("supervised", "cross-entropy on one task's labels; the penultimate layer", uses_labels=True),
    "supervised-at": Card("supervised, adversarially trained", "Madry, Makelov, Schmidt, Tsipras, Vladu, Towards "
                          "Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018", uses_labels=True),
    "random-init": Card("baseline", "the encoder net at its random initialisation (no training)"),
}


def card(name: str) -> Card | None:
    """The card of learner ``name``: built in, or from a plugin class's ``family``/``paper``/``uses_labels``;
    None for a plugin that declares none."""
    if name in CARDS:
        return CARDS[name]
    from robrep.registry import LEARNERS

    try:
        cls = LEARNERS.get(name)
    except KeyError:
        return None
    family = getattr(cls, "family", None)
    return Card(family, getattr(cls, "paper", ""), bool(getattr(cls, "uses_labels", False))) if family else None
