"""The model and its tokens: a checkpoint loaded safely, images prepared as the model's data config says, one
forward and backward pass that capture every stage, and the tokens restored into pictures."""
