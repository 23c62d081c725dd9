/* gateway/config/limits.h — the sizes of the configuration's strings, NUL included: what
 * config.h's types and the configuration engine's private parser (config-int.h) both size
 * their buffers by, so that neither header needs the other. */
#ifndef CG_CONFIG_LIMITS_H
#define CG_CONFIG_LIMITS_H

#define CG_CONF_NAME_MAX     64     /* section names and "host:port" strings */
#define CG_CONF_PATH_MAX     4096   /* the config file's path */
#define CG_CONF_SOCKPATH_MAX 108    /* sizeof(sun_path): stats_socket */

#endif
