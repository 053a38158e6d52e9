/* Scene generator: count distribution, boxes, value ranges, sprite overlap,
 * noise statistics, determinism and independence of a scene from N. Uses a
 * synthetic item pool so it runs without the Fashion-MNIST package. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "supair/scenes.h"
#include "testutil.h"

#define SIDE 28
#define NITEMS 20
static uint8_t items[NITEMS * SIDE * SIDE], item_labels[NITEMS];
static sp_scene_pool pool;

/* Solid discs of different brightness: any overlap of two of them exceeds
 * 255 only when both are bright, so the redraw rule is exercised. */
static void make_pool(void) {
    for (int k = 0; k < NITEMS; k++) {
        int v = 60 + 10 * k;
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++) {
                double dy = y - 13.5, dx = x - 13.5;
                items[k * SIDE * SIDE + y * SIDE + x] = dx * dx + dy * dy < 12.0 * 12.0 ? v : 0;
            }
        item_labels[k] = (uint8_t)(k % 10);
    }
    pool = (sp_scene_pool){items, item_labels, NITEMS, SIDE};
}

#define N 3000
static float imgs[N * SP_SCENE_PIXELS], imgs2[N * SP_SCENE_PIXELS];
static int32_t cnt[N], cnt2[N], lab[N * 4];
static float box[N * 4 * 4], box2[N * 4 * 4];

static sp_scene_spec spec_of(sp_scene_kind k, sp_scene_noise nz, int maxo, uint64_t seed) {
    sp_scene_spec s = {k, nz, maxo, seed};
    return s;
}

static void make(const sp_scene_spec *s, int split, long n, float *im, int32_t *c, float *b) {
    sp_error e;
    int rc = sp_scenes_make_range(im, c, b, lab, s, &pool, split, 0, n, &e);
    if (rc) printf("\n  make_range failed: %s\n", e.msg);
    CU_ASSERT_EQUAL_FATAL(rc, SP_OK);
}

static void test_counts_uniform(void) {
    make_pool();
    for (int maxo = 2; maxo <= 3; maxo++) {
        sp_scene_spec s = spec_of(SP_SCENES_OBJECTS, SP_NOISE_NONE, maxo, 7);
        make(&s, SP_SPLIT_TRAIN, N, imgs, cnt, box);
        long hist[4] = {0};
        for (int i = 0; i < N; i++) {
            CU_ASSERT_FATAL(cnt[i] >= 0 && cnt[i] <= maxo);
            hist[cnt[i]]++;
        }
        for (int k = 0; k <= maxo; k++) /* 4+ sigma of a binomial proportion at N = 3000 */
            SP_ASSERT_CLOSE((double)hist[k] / N, 1.0 / (maxo + 1), 0.036);
    }
}

static void test_objects_boxes_values(void) {
    make_pool();
    sp_scene_spec s = spec_of(SP_SCENES_OBJECTS, SP_NOISE_NONE, 2, 11);
    make(&s, SP_SPLIT_TEST, N, imgs, cnt, box);
    double wsum = 0;
    long nobj = 0, bad_box = 0, bad_val = 0, outside = 0, bad_lab = 0;
    float vmax = 0;
    for (int i = 0; i < N; i++) {
        const float *im = imgs + (long)i * SP_SCENE_PIXELS;
        const float *b = box + i * 2 * 4;
        unsigned char inside[SP_SCENE_PIXELS] = {0};
        for (int k = 0; k < 2; k++) {
            if (k >= cnt[i]) {
                bad_box += b[4 * k] != 0 || b[4 * k + 1] != 0 || b[4 * k + 2] != 0 || b[4 * k + 3] != 0;
                bad_lab += lab[i * 2 + k] != -1;
                continue;
            }
            float x = b[4 * k], y = b[4 * k + 1], w = b[4 * k + 2], h = b[4 * k + 3];
            bad_box += !(x >= 0 && y >= 0 && w == h && w >= 1 && x + w <= SP_SCENE_SIZE - 1 &&
                         y + h <= SP_SCENE_SIZE - 1 && x == floorf(x) && y == floorf(y));
            bad_lab += lab[i * 2 + k] < 0 || lab[i * 2 + k] > 9;
            wsum += w;
            nobj++;
            for (int yy = (int)y; yy < (int)(y + h) && yy < SP_SCENE_SIZE; yy++)
                for (int xx = (int)x; xx < (int)(x + w) && xx < SP_SCENE_SIZE; xx++)
                    inside[yy * SP_SCENE_SIZE + xx] = 1;
        }
        for (int p = 0; p < SP_SCENE_PIXELS; p++) {
            float v = im[p];
            if (v > vmax) vmax = v;
            /* no noise: every pixel is exactly k/255 with k <= 255 */
            float k255 = roundf(v * 255.0f);
            bad_val += !(v >= 0.0f && v <= 1.0f) || k255 / 255.0f != v;
            outside += !inside[p] && v != 0.0f;
        }
    }
    CU_ASSERT_EQUAL(bad_box, 0);
    CU_ASSERT_EQUAL(bad_val, 0);
    CU_ASSERT_EQUAL(outside, 0); /* all ink lies inside the true boxes */
    CU_ASSERT_EQUAL(bad_lab, 0);
    CU_ASSERT(vmax <= 1.0f);
    CU_ASSERT(vmax > 0.9f);
    /* E[floor(28 / N(1.3, 0.1))] = 21.1 */
    SP_ASSERT_CLOSE(wsum / nobj, 21.1, 0.3);
    if (bad_box || bad_val || outside) printf("\n  bad boxes %ld, bad values %ld, ink outside %ld\n", bad_box, bad_val, outside);
}

/* Draws a sprite's mask the way the generator defines the shapes. */
static int sprite_has(int shape, int size, int dy, int dx) {
    int h = size / 2;
    dy -= h;
    dx -= h;
    if (shape == SP_SPRITE_CIRCLE) return dy * dy + dx * dx < h * h;
    if (shape == SP_SPRITE_SQUARE) return 1;
    return abs(dy) + abs(dx) < h;
}

static void test_sprites(void) {
    sp_scene_spec s = spec_of(SP_SCENES_SPRITES, SP_NOISE_NONE, 2, 5);
    sp_error e;
    CU_ASSERT_EQUAL_FATAL(sp_scenes_make_range(imgs, cnt, box, lab, &s, NULL, 0, 0, N, &e), SP_OK);
    static const float grey[3] = {1.0f, 0.8f, 0.7f};
    long overlaps = 0, mismatches = 0, bad_box = 0, hist[3] = {0}, shapes[3] = {0};
    for (int i = 0; i < N; i++) {
        hist[cnt[i]]++;
        float want[SP_SCENE_PIXELS] = {0};
        unsigned char cover[SP_SCENE_PIXELS] = {0};
        for (int k = 0; k < cnt[i]; k++) {
            const float *b = box + (i * 2 + k) * 4;
            int x = (int)b[0], y = (int)b[1], w = (int)b[2], shape = lab[i * 2 + k];
            bad_box += x < 0 || y < 0 || x > 38 || y > 38 || w < 12 || w > 16 || b[3] != w ||
                       x + w > 50 || y + w > 50 || shape < 0 || shape > 2;
            if (shape < 0 || shape > 2) continue;
            shapes[shape]++;
            for (int dy = 0; dy < w; dy++)
                for (int dx = 0; dx < w; dx++)
                    if (sprite_has(shape, w, dy, dx)) {
                        int p = (y + dy) * SP_SCENE_SIZE + x + dx;
                        overlaps += cover[p]++ > 0;
                        want[p] = grey[shape];
                    }
        }
        for (int p = 0; p < SP_SCENE_PIXELS; p++)
            mismatches += imgs[(long)i * SP_SCENE_PIXELS + p] != want[p];
    }
    CU_ASSERT_EQUAL(overlaps, 0);
    CU_ASSERT_EQUAL(mismatches, 0);
    CU_ASSERT_EQUAL(bad_box, 0);
    for (int k = 0; k < 3; k++) {
        SP_ASSERT_CLOSE((double)hist[k] / N, 1.0 / 3, 0.036);
        SP_ASSERT_CLOSE((double)shapes[k] / (hist[1] + 2 * hist[2]), 1.0 / 3, 0.04);
    }
}

static void test_noise(void) {
    make_pool();
    sp_scene_spec s = spec_of(SP_SCENES_OBJECTS, SP_NOISE_GAUSS, 2, 3);
    make(&s, SP_SPLIT_TRAIN, 1000, imgs, cnt, box);
    /* empty scenes: E[clip(0.1 + 0.2 Z, 0, 1)] = 0.1 Phi(0.5) + 0.2 phi(0.5) = 0.1396 */
    double sum = 0;
    long n = 0, out_of_range = 0;
    for (int i = 0; i < 1000; i++)
        for (int p = 0; p < SP_SCENE_PIXELS; p++) {
            float v = imgs[(long)i * SP_SCENE_PIXELS + p];
            out_of_range += !(v >= 0.0f && v <= 1.0f);
            if (cnt[i] == 0) sum += v, n++;
        }
    CU_ASSERT_EQUAL(out_of_range, 0);
    CU_ASSERT(n > 0);
    SP_ASSERT_CLOSE(sum / n, 0.1396, 0.002);

    s = spec_of(SP_SCENES_OBJECTS, SP_NOISE_GRID, 2, 3);
    make(&s, SP_SPLIT_TRAIN, 300, imgs, cnt, box);
    long bad = 0, empties = 0;
    for (int i = 0; i < 300; i++) {
        if (cnt[i] != 0) continue;
        empties++;
        const float *im = imgs + (long)i * SP_SCENE_PIXELS;
        int oy = -1, ox = -1;
        for (int r = 0; r < 5 && oy < 0; r++) {
            int all = 1;
            for (int c = 0; c < SP_SCENE_SIZE; c++) all &= im[r * SP_SCENE_SIZE + c] > 0;
            if (all) oy = r;
        }
        for (int c = 0; c < 5 && ox < 0; c++) {
            int all = 1;
            for (int r = 0; r < SP_SCENE_SIZE; r++) all &= im[r * SP_SCENE_SIZE + c] > 0;
            if (all) ox = c;
        }
        for (int r = 0; r < SP_SCENE_SIZE; r++)
            for (int c = 0; c < SP_SCENE_SIZE; c++) {
                int on = (oy >= 0 && r % 5 == oy) || (ox >= 0 && c % 5 == ox);
                float want = on ? 0.4f : 0.0f;
                bad += fabsf(im[r * SP_SCENE_SIZE + c] - want) > 1e-6f;
            }
        bad += oy < 0 || ox < 0;
    }
    CU_ASSERT(empties > 50);
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_determinism_and_independence(void) {
    make_pool();
    sp_scene_spec s = spec_of(SP_SCENES_OBJECTS, SP_NOISE_GAUSS, 2, 42);
    make(&s, SP_SPLIT_TRAIN, 500, imgs, cnt, box);
    make(&s, SP_SPLIT_TRAIN, 500, imgs2, cnt2, box2);
    CU_ASSERT_EQUAL(memcmp(imgs, imgs2, sizeof(float) * 500 * SP_SCENE_PIXELS), 0);
    CU_ASSERT_EQUAL(memcmp(cnt, cnt2, sizeof(int32_t) * 500), 0);
    CU_ASSERT_EQUAL(memcmp(box, box2, sizeof(float) * 500 * 8), 0);
    /* a scene depends on (seed, split, index) only: not on N or the start */
    sp_error e;
    float one[SP_SCENE_PIXELS], onebox[8];
    int32_t onec;
    CU_ASSERT_EQUAL_FATAL(sp_scene_make(one, &onec, onebox, NULL, &s, &pool, SP_SPLIT_TRAIN, 357, &e), SP_OK);
    CU_ASSERT_EQUAL(memcmp(one, imgs + 357L * SP_SCENE_PIXELS, sizeof one), 0);
    CU_ASSERT_EQUAL(onec, cnt[357]);
    CU_ASSERT_EQUAL(memcmp(onebox, box + 357 * 8, sizeof onebox), 0);
    CU_ASSERT_EQUAL_FATAL(sp_scenes_make_range(imgs2, cnt2, box2, lab, &s, &pool, SP_SPLIT_TRAIN, 100, 50, &e), SP_OK);
    CU_ASSERT_EQUAL(memcmp(imgs2, imgs + 100L * SP_SCENE_PIXELS, sizeof(float) * 50 * SP_SCENE_PIXELS), 0);
    /* another seed or split gives other scenes */
    sp_scene_spec s2 = s;
    s2.seed = 43;
    make(&s2, SP_SPLIT_TRAIN, 500, imgs2, cnt2, box2);
    CU_ASSERT_NOT_EQUAL(memcmp(imgs, imgs2, sizeof(float) * 500 * SP_SCENE_PIXELS), 0);
    make(&s, SP_SPLIT_TEST, 500, imgs2, cnt2, box2);
    CU_ASSERT_NOT_EQUAL(memcmp(cnt, cnt2, sizeof(int32_t) * 500), 0);
}

static void test_resize(void) {
    uint8_t in[SIDE * SIDE], out[SIDE * SIDE];
    memset(in, 200, sizeof in);
    sp_resize_bilinear_u8(out, 21, in, SIDE);
    long bad = 0;
    for (int i = 0; i < 21 * 21; i++) bad += out[i] != 200; /* weights sum to one */
    CU_ASSERT_EQUAL(bad, 0);
    for (int i = 0; i < SIDE * SIDE; i++) in[i] = (uint8_t)((i * 37) % 256);
    sp_resize_bilinear_u8(out, SIDE, in, SIDE);
    CU_ASSERT_EQUAL(memcmp(in, out, sizeof in), 0); /* same size: identity */
    /* a left-right ramp stays a ramp: monotone and spanning the range */
    for (int y = 0; y < SIDE; y++)
        for (int x = 0; x < SIDE; x++) in[y * SIDE + x] = (uint8_t)(x * 9);
    sp_resize_bilinear_u8(out, 20, in, SIDE);
    for (int x = 1; x < 20; x++) CU_ASSERT(out[5 * 20 + x] > out[5 * 20 + x - 1]);
    CU_ASSERT(out[0] < 15 && out[19] > 230);
}

static void test_bad_spec(void) {
    make_pool();
    float im[SP_SCENE_PIXELS];
    int32_t c;
    sp_error e;
    sp_scene_spec s = spec_of(SP_SCENES_OBJECTS, SP_NOISE_NONE, 0, 1);
    CU_ASSERT_EQUAL(sp_scene_make(im, &c, NULL, NULL, &s, &pool, 0, 0, &e), SP_EINPUT);
    s = spec_of(SP_SCENES_SPRITES, SP_NOISE_NONE, 5, 1);
    CU_ASSERT_EQUAL(sp_scene_make(im, &c, NULL, NULL, &s, NULL, 0, 0, &e), SP_EINPUT);
    s = spec_of(SP_SCENES_OBJECTS, SP_NOISE_NONE, 2, 1);
    CU_ASSERT(sp_scenes_stores_uint8(&s));
    s.noise = SP_NOISE_GRID;
    CU_ASSERT(sp_scenes_stores_uint8(&s));
    s.noise = SP_NOISE_GAUSS;
    CU_ASSERT(!sp_scenes_stores_uint8(&s));
    s = spec_of(SP_SCENES_SPRITES, SP_NOISE_NONE, 2, 1);
    CU_ASSERT(!sp_scenes_stores_uint8(&s));
    sp_scene_kind k;
    sp_scene_noise nz;
    CU_ASSERT(sp_scene_kind_parse(&k, "sprites") == 0 && k == SP_SCENES_SPRITES);
    CU_ASSERT(sp_scene_kind_parse(&k, "digits") == -1);
    CU_ASSERT(sp_scene_noise_parse(&nz, "grid") == 0 && nz == SP_NOISE_GRID);
    CU_ASSERT_STRING_EQUAL(sp_scene_noise_name(SP_NOISE_GAUSS), "gauss");
}

int main(void) {
    static const sp_test_case cases[] = {
        {"counts ~ U{0..max}", test_counts_uniform},
        {"objects: boxes, k/255 values, ink inside boxes", test_objects_boxes_values},
        {"sprites: shapes, grey levels, no overlap", test_sprites},
        {"gauss and grid noise", test_noise},
        {"same seed same scenes; scene independent of N", test_determinism_and_independence},
        {"bilinear resize", test_resize},
        {"spec validation and names", test_bad_spec},
        {NULL, NULL},
    };
    static const sp_test_suite suites[] = {{"scenes", cases}, {NULL, NULL}};
    return sp_test_main(suites);
}
