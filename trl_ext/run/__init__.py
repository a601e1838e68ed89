"""The run layer: recipe arguments, settings, evaluation, budgets and progress, tracking; what recipes are made of."""
