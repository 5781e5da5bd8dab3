/* image.c - STUB: `hedge image import|ls|rm`, to be written with the image store. */
#include "cli.h"
#include <stdio.h>
int cmd_image(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "hedge image: not built yet\n"); return 125; }
