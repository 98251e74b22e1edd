"""Running a training job: tf.distribute strategy, the multi-worker loop, launcher checks."""
