// llm.c's CPU training step, timed on a checkpoint and a batch that benchmarks/llmc.py wrote.
//
//     llmc_step MODEL.bin BATCH.bin B T STEPS [GRADS.bin]
//
// The step is llm.c's own: gpt2_forward, gpt2_zero_grad, gpt2_backward and gpt2_update (AdamW) from its
// train_gpt2.c, built with TESTING defined so that its main() (which reads its own data files) is left out.
// BATCH.bin holds B*T input ids then B*T target ids, int32. Each step prints one line:
//     step S loss L ms M
// With GRADS.bin, the first step's gradients (llm.c's parameter layout, float32) are written there, outside
// the timed part, for llmc.py to hold against ours.
#define TESTING
#include "train_gpt2.c"

static double seconds_since(struct timespec start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: %s MODEL.bin BATCH.bin B T STEPS [GRADS.bin]\n", argv[0]);
        return 2;
    }
    GPT2 model;
    gpt2_build_from_checkpoint(&model, argv[1]);
    int B = atoi(argv[3]), T = atoi(argv[4]), steps = atoi(argv[5]);
    int *ids = (int *)mallocCheck(2 * (size_t)B * T * sizeof(int));  // inputs (B, T), then targets (B, T)
    FILE *batch = fopenCheck(argv[2], "rb");
    freadCheck(ids, sizeof(int), 2 * (size_t)B * T, batch);
    fcloseCheck(batch);

    for (int step = 0; step < steps; step++) {
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        gpt2_forward(&model, ids, ids + B * T, B, T);
        gpt2_zero_grad(&model);
        gpt2_backward(&model);
        double seconds = seconds_since(start);
        if (step == 0 && argc == 7) {  // not timed: the gradients before the first update
            FILE *grads = fopenCheck(argv[6], "wb");
            fwrite(model.grads_memory, sizeof(float), model.num_parameters, grads);
            fcloseCheck(grads);
        }
        clock_gettime(CLOCK_MONOTONIC, &start);
        gpt2_update(&model, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.1f, step + 1);
        seconds += seconds_since(start);
        printf("step %d loss %.9g ms %.3f\n", step, model.mean_loss, seconds * 1000);
        fflush(stdout);
    }
    gpt2_free(&model);
    free(ids);
    return 0;
}
