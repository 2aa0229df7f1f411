"""Training and human-in-the-loop fine-tuning (:func:`flowseg.engine.training.train.train`).

Modules
-------
train        :func:`train`, the entry point
start        its result, the model to start from, output checks, per-image zoom
prep         (image, labels) pairs -> cached training samples
batches      augmented batches (in process or in worker processes); ``augment``: the
             random rotation / flip / scale / crop with flows rotated
schedule     recipes, learning-rate schedules, optimizers, the loss
budget       time budgets and per-step learning rates of fine-tuning
loop         the epoch / batch loop
precision    fp32 or bf16 autocast of the forward (CPU), ``FLOWSEG_PRECISION``
checkpoint   resumable checkpoints
validate     validation loss and AP during training
quickcheck   the check that keeps a fine-tune from returning a worse model
finetune     scoring, time reservation and the outcome of a fine-tune
finish       the training record and the size model at the end
trainset     a training set on disk for the correct-and-retrain loop
"""
