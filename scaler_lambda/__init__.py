"""The scaler Lambda: `decision` decides, `handler` gathers inputs and acts."""
