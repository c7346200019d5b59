/*
 * replay_main.c - runs a fuzz target over saved inputs without libFuzzer, so
 * the corpus and the regressions replay in every ctest run, under gcc too
 * (jansson's standaloneengine, SQLite's fuzzcheck).
 *
 * usage: fuzz_replay_<target> [--allow-empty] DIR...
 * Every regular file of each DIR (sorted by name; dot files and README*
 * skipped) is one input. A DIR that is missing, or holds no input, fails the
 * run, unless --allow-empty precedes it (regressions/<target> starts empty).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int is_input(const char *name)
{
    return name[0] != '.' && strncmp(name, "README", 6) != 0;
}

/* Reads the whole file into an exact-size heap block, so ASan sees any read
 * past the end of the input. Returns 0, or -1 after printing why. */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        fprintf(stderr, "replay: cannot open '%s'\n", path);
        if (f)
            fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *data = malloc(n ? n : 1);
    if (data == NULL || fread(data, 1, n, f) != n) {
        fprintf(stderr, "replay: cannot read '%s'\n", path);
        free(data);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(data, n);
    free(data);
    return 0;
}

/* Returns the number of inputs run, or -1. */
static int run_dir(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    int ran = 0, rc = 0;
    if (n < 0) {
        fprintf(stderr, "replay: cannot read directory '%s'\n", dir);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        if (rc == 0 && is_input(names[i]->d_name)) {
            snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                rc = run_file(path);
                ran++;
            }
        }
        free(names[i]);
    }
    free(names);
    return rc ? -1 : ran;
}

int main(int argc, char **argv)
{
    int allow_empty = 0, total = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s [--allow-empty] DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--allow-empty") == 0) {
            allow_empty = 1;
            continue;
        }
        int n = run_dir(argv[i]);
        if (n < 0)
            return 1;
        if (n == 0 && !allow_empty) {
            fprintf(stderr, "replay: no inputs in '%s'\n", argv[i]);
            return 1;
        }
        printf("replay: %d inputs from %s\n", n, argv[i]);
        total += n;
        allow_empty = 0;
    }
    printf("replay: %d inputs, no failure\n", total);
    return 0;
}
