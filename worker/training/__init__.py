"""The model commands (weights, train, models, predict); the training itself is in models/."""
