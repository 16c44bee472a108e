"""Transcriptions of Keras 2.11 callbacks' on_epoch_end logic (keras/callbacks.py):
the independent oracle for our EarlyStopping and ReduceLROnPlateau."""

class KerasEarlyStopping:  # keras 2.11 EarlyStopping, min_delta=0, baseline=None
    def __init__(self, patience, maximize):
        self.patience, self.maximize = patience, maximize
        self.best = -float("inf") if maximize else float("inf")
        self.wait = 0
    def improved(self, cur, ref):
        return cur > ref if self.maximize else cur < ref
    def on_epoch_end(self, epoch, current):  # epoch is 0-based as in Keras
        self.wait += 1
        if self.improved(current, self.best):
            self.best = current
            self.wait = 0
        return self.wait >= self.patience and epoch > 0

class KerasReduceLR:  # keras 2.11 ReduceLROnPlateau, min_delta=1e-4, cooldown=0, min_lr=0
    def __init__(self, factor, patience, maximize):
        self.factor, self.patience, self.maximize = factor, patience, maximize
        self.min_delta, self.cooldown, self.min_lr = 1e-4, 0, 0.0
        self.best = -float("inf") if maximize else float("inf")
        self.wait = self.cooldown_counter = 0
    def op(self, a, b):
        return a > b + self.min_delta if self.maximize else a < b - self.min_delta
    def on_epoch_end(self, current, lr):
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.op(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.cooldown_counter > 0:
            self.wait += 1
            if self.wait >= self.patience and lr > self.min_lr:
                lr = max(lr * self.factor, self.min_lr)
                self.cooldown_counter = self.cooldown
                self.wait = 0
        return lr
