"""Training: the network, the in-memory data module, the LightningModule, and the train and export stages."""
