/* The configuration keys every model shares (DESIGN.md contract). Model
 * keys live with each model; models change these defaults through their
 * vtable's shared_defaults (e.g. SRNN: batch_size=64, adam_form=lasagne). */
#include "supair/train.h"

const sp_cfg_key sp_train_keys[] = {
    {"data", SP_CFG_STRING, "", "training data file (set from --data; eval's default)", 0, 0, NULL, 0},
    {"data_preload_mb", SP_CFG_INT, "1024",
     "scenes: hold the train and eval splits in memory, one copy per node shared by its ranks, "
     "up to this many MB (0: read every batch from the file)", 0, 1e7, NULL, 0},
    {"batch_size", SP_CFG_INT, "256",
     "GLOBAL batch: split evenly across ranks (must divide by the rank count)", 1, 1e9, NULL, 0},
    {"lr", SP_CFG_FLOAT, "0.001", "Adam learning rate (models may schedule it)", 0, 10, NULL, 0},
    {"seed", SP_CFG_INT, "1", "seed of initialisation, shuffles and sampling noise", 0, 4e18, NULL,
     0},
    {"epochs", SP_CFG_INT, "20", "training budget in epochs when neither --steps nor --epochs is given",
     1, 1e9, NULL, 0},
    {"ckpt_every", SP_CFG_INT, "500", "checkpoint every N steps (and when training ends)", 1, 1e12,
     NULL, 0},
    {"keep_ckpts", SP_CFG_INT, "3", "keep the newest K step checkpoints (best.h5 is kept apart)", 1,
     1e6, NULL, 0},
    {"eval_every", SP_CFG_INT, "50", "evaluate every N steps on eval_n examples (0: only at the end)",
     0, 1e12, NULL, 0},
    {"eval_n", SP_CFG_INT, "1000", "examples per periodic evaluation (the full split at the end)", 1,
     1e12, NULL, 0},
    {"eval_final", SP_CFG_BOOL, "true",
     "evaluate on the full split when training ends (benchmarks turn it off)", 0, 0, NULL, 0},
    {"eval_split", SP_CFG_STRING, "test", "split of periodic evaluations (and best.h5)", 0, 0,
     "test|valid", 0},
    {"log_every", SP_CFG_INT, "10", "progress line every N steps", 1, 1e12, NULL, 0},
    {"metrics_flush_every", SP_CFG_INT, "10", "flush metrics.h5 every N rows (SWMR readers see them)",
     1, 1e12, NULL, 0},
    {"checksum_every", SP_CFG_INT, "100", "compare a parameter checksum across ranks every N steps",
     1, 1e12, NULL, 0},
    {"grad_reduce", SP_CFG_STRING, "node",
     "node: the ranks of a node share one copy of the parameters and Adam moments, sum each "
     "other's gradients through shared memory and each update a slice (nodes then allreduce the "
     "slices); mpi: bucketed allreduce overlapped with backward, every rank updates everything",
     0, 0, "node|mpi", 0},
    {"grad_group", SP_CFG_INT, "0",
     "grad_reduce=node: ranks per sharing group within a node (0: the whole node; e.g. the ranks "
     "of one socket)", 0, 1e6, NULL, 0},
    {"bucket_mb", SP_CFG_FLOAT, "4", "grad_reduce=mpi: allreduce bucket size in MB", 0.001, 4096,
     NULL, 0},
    {"adam_form", SP_CFG_STRING, "pytorch", "Adam epsilon placement (MODELS.md)", 0, 0,
     "pytorch|lasagne", 0},
    {"adam_b1", SP_CFG_FLOAT, "0.9", "Adam beta1", 0, 1, NULL, 0},
    {"adam_b2", SP_CFG_FLOAT, "0.999", "Adam beta2", 0, 1, NULL, 0},
    {"adam_eps", SP_CFG_FLOAT, "1e-8", "Adam epsilon", 0, 1, NULL, 0},
    {"clip_norm", SP_CFG_FLOAT, "0", "rescale gradients to this global norm (0: off)", 0, 1e30, NULL,
     0},
    {"clip_value", SP_CFG_FLOAT, "0", "then clip each gradient element to +-this (0: off)", 0, 1e30,
     NULL, 0},
    {"max_bad_steps", SP_CFG_INT, "20",
     "consecutive steps with a non-finite loss or gradient (skipped) before the run fails", 1, 1e9,
     NULL, 0},
};
const int sp_train_n_keys = (int)(sizeof sp_train_keys / sizeof sp_train_keys[0]);
