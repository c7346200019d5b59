/* test_log.c - level names, escaping of client text, one line per event. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "livequery/log.h"
#include "lq_test.h"

static void test_levels(void)
{
    ASSERT_EQ(lq_log_level_parse("debug"), LQ_LOG_DEBUG);
    ASSERT_EQ(lq_log_level_parse("WARN"), LQ_LOG_WARN);
    ASSERT_EQ(lq_log_level_parse("loud"), -1);
}

static void test_escape(void)
{
    char buf[16];
    ASSERT_STREQ(lq_log_escape(buf, sizeof(buf), "a\"b\\c"), "a\\\"b\\\\c");
    ASSERT_STREQ(lq_log_escape(buf, 6, "abcdefgh"), "abcd"); /* truncated, terminated */
}

static void test_one_line(void)
{
    char path[] = "/tmp/lq_test_log_XXXXXX", line[512];
    int fd = mkstemp(path), saved = dup(2);
    FILE *f;

    ASSERT_TRUE(fd >= 0);
    dup2(fd, 2);
    lq_log_level = LQ_LOG_INFO;
    LQ_INFO("hello", "field=\"%s\"", "two\nlines");
    LQ_DEBUG("hidden", NULL);
    fflush(stderr);
    dup2(saved, 2);
    f = fopen(path, "r");
    ASSERT_TRUE(fgets(line, sizeof(line), f) != NULL);
    ASSERT_TRUE(strstr(line, "level=info msg=\"hello\" field=\"two lines\"\n") != NULL);
    ASSERT_TRUE(fgets(line, sizeof(line), f) == NULL); /* debug is off; nothing else */
    fclose(f);
    close(fd);
    unlink(path);
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {
        {"levels", test_levels}, {"escape", test_escape}, {"one_line", test_one_line}, {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
